// apps/web: a static site (dist/apps/web) that classifies photos with an exported model entirely in the browser.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  // Relative URLs: the site works from any folder of any static server (and with the model beside it).
  base: './',
  publicDir: 'public',
  build: {
    outDir: fileURLToPath(new URL('../../dist/apps/web', import.meta.url)),
    emptyOutDir: true,
    // The .wasm binaries stay separate files (fetched from this origin, cached by the service worker).
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 4096,
  },
  server: { host: '127.0.0.1', port: 4173 },
  preview: { host: '127.0.0.1', port: 4173 },
});
