// Offline: every file of the app (listed in app.json at build time) is cached on first open and served from the
// cache afterwards, so the page opens and scores with no network. `ordnance tablet build` writes the line
// `const CACHE = "ordnance-tablet-<digest of the app's files>";` below "use strict", so a rebuilt app is a new
// worker, which the browser installs on the next open, and whose cache replaces the old one. Responses get the two
// headers that make the page cross-origin isolated, which lets onnxruntime-web use several threads.
"use strict";
const ISOLATION = { "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp" };

async function build() {
  const response = await fetch("app.json", { cache: "no-store" });
  const app = await response.json();
  return { name: CACHE, files: ["./", "app.json", ...Object.keys(app.files)] };
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const { name, files } = await build();
    const cache = await caches.open(name);
    await cache.addAll(files.map((f) => new Request(f, { cache: "reload" }))); // never the HTTP cache's old copy
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key !== CACHE && key.startsWith("ordnance-tablet-")) await caches.delete(key);
    await self.clients.claim();
  })());
});

function isolated(response) {
  if (!response || response.type === "opaque") return response;
  const headers = new Headers(response.headers);
  for (const [k, v] of Object.entries(ISOLATION)) headers.set(k, v);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || event.request.method !== "GET") return;
  event.respondWith((async () => {
    const cached = await (await caches.open(CACHE)).match(event.request, { ignoreSearch: true });
    if (cached) return isolated(cached);
    return isolated(await fetch(event.request));
  })());
});
