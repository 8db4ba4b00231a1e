// Starts Swagger UI on /docs (service/docs.py) with FastAPI's default options; a file, not an inline script, so the
// page needs no 'unsafe-inline' in a Content-Security-Policy.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
