// Offline support for the catdog web app: same-origin GETs go to the network first and are kept in the cache, and
// the cache answers when the network does not. The page asks (message 'cache') to keep everything it fetched before
// this worker controlled it: the page, scripts, the .wasm binaries, the model's files.
const CACHE = 'catdog-web-v1';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('message', (event) => {
  if (event.data?.type !== 'cache') return;
  const urls = (event.data.urls || []).filter((u) => new URL(u).origin === self.location.origin);
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => Promise.all(urls.map((u) => cache.add(u).catch(() => undefined))))
      .then(() => event.ports[0]?.postMessage({ cached: urls.length })),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(request);
        if (response.ok) await cache.put(request, response.clone());
        return response;
      } catch (err) {
        const hit = await cache.match(request);
        if (hit) return hit;
        throw err;
      }
    })(),
  );
});
