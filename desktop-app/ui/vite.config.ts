import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API to a running hub (STORESYNC_HUB, default 127.0.0.1:8080),
// so the dev server and the hub share one origin as they do in production.
const hub = process.env.STORESYNC_HUB ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  // Absolute asset URLs: the hub serves client-side routes such as /stores/s1 with
  // index.html, whose scripts must still resolve from the root.
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1200,
  },
  server: {
    proxy: {
      "/api": { target: hub, ws: true },
      "/oauth": hub,
    },
  },
});
