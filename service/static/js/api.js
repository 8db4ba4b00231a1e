// The service's public API as the page uses it: the key from sessionStorage, JSON and PNG requests, errors as
// exceptions that carry the service's {detail, type}, and a decoder that keeps at most one request in flight.

const KEY_ITEM = "latentserve.apiKey";

export class ApiError extends Error {
  constructor(status, detail, type) {
    super(`${status} ${type}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.type = type;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

async function call(path, { method = "GET", body, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let reply;
  try {
    reply = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `the service cannot be reached (${err.message})`, "network");
  }
  if (!reply.ok) {
    let detail = reply.statusText, type = "http_error";
    try {
      const error = await reply.json();
      detail = error.detail ?? detail;
      type = error.type ?? type;
    } catch { /* a body that is not the service's JSON error: keep the status text */ }
    throw new ApiError(reply.status, detail, type);
  }
  return reply;
}

export async function getJson(path) {
  return (await call(path)).json();
}

export async function postJson(path, body) {
  return (await call(path, { method: "POST", body })).json();
}

// A PNG reply as an ImageBitmap (decoded off the main thread).
export async function postPng(path, body) {
  const reply = await call(path, { method: "POST", body, accept: "image/png" });
  return createImageBitmap(await reply.blob());
}

export async function getBlobUrl(path) {
  const reply = await call(path, { accept: "image/png" });
  return URL.createObjectURL(await reply.blob());
}

export function query(model, version) {
  return `?model=${encodeURIComponent(model)}&version=${encodeURIComponent(version)}`;
}

// Decodes one latent vector at a time: while a request is in flight only the newest asked-for point is kept, and it
// is sent when the answer arrives, so requests never pile up and the preview always catches up with the pointer.
export class LatestDecoder {
  constructor(onImage, onError) {
    this.onImage = onImage;
    this.onError = onError;
    this.inFlight = false;
    this.next = null;
    this.target = null;
    this.completed = 0;
    this.sent = 0;
    this.roundTripsMs = [];  // the latest 100, for the page's rate line and the browser test
  }

  request(target, z) {
    this.next = { target, z };
    if (!this.inFlight) this._send();
  }

  async _send() {
    const job = this.next;
    this.next = null;
    this.inFlight = true;
    this.sent += 1;
    const start = performance.now();
    try {
      // JSON rather than a PNG: parsing 784 numbers is quicker than decoding an image off the main thread.
      const { images } = await postJson(`/decode${query(job.target.model, job.target.version)}`, { latents: [job.z] });
      const image = images[0];
      this.completed += 1;
      this.roundTripsMs.push(performance.now() - start);
      if (this.roundTripsMs.length > 100) this.roundTripsMs.shift();
      this.onImage(image, job.z);
    } catch (err) {
      this.onError(err);
    } finally {
      this.inFlight = false;
      if (this.next) this._send();
    }
  }
}
