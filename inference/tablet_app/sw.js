// Offline: every file of the app (listed in app.json at build time) is cached on first open and served from the
// cache afterwards, so the page opens and scores with no network. Responses get the two headers that make the page
// cross-origin isolated, which lets onnxruntime-web use several threads.
"use strict";
const ISOLATION = { "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp" };

async function build() {
  const response = await fetch("app.json", { cache: "no-store" });
  const app = await response.json();
  return { name: app.cache, files: ["./", "app.json", ...Object.keys(app.files)] };
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const { name, files } = await build();
    const cache = await caches.open(name);
    await cache.addAll(files);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const { name } = await build().catch(() => ({ name: null }));
    for (const key of await caches.keys()) if (name && key !== name && key.startsWith("ordnance-tablet-")) await caches.delete(key);
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
    const cached = await caches.match(event.request, { ignoreSearch: true });
    if (cached) return isolated(cached);
    return isolated(await fetch(event.request));
  })());
});
