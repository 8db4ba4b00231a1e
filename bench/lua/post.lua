-- One POST per request with a body prepared once (read from $BENCH_BODY when each thread starts).
-- Headers from $BENCH_CONTENT_TYPE, $BENCH_ACCEPT, $BENCH_AUTH and $BENCH_HEADERS; the URL (path and query) comes from the command
-- line. done() prints one line, "WRKJSON {...}", that bench/wrk.py parses: counts, errors and latency percentiles in
-- microseconds. wrk counts a response with status >= 400 in errors.status; the API sends no 1xx/3xx to a POST.

local function read_file(path)
  local f = assert(io.open(path, "rb"), "cannot open BENCH_BODY " .. tostring(path))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.body = read_file(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
local accept = os.getenv("BENCH_ACCEPT")
if accept and accept ~= "" then wrk.headers["Accept"] = accept end
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end
-- Any other headers, one "Name: value" a line (e.g. the protocol's Inference-Header-Content-Length).
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end

-- The "WRKJSON {...}" line; overload.lua (which runs this file first) appends its own fields through `extra`.
function wrk_json(summary, latency, extra)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"p999_us":%.0f,"mean_us":%.1f,"max_us":%.0f%s}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max, extra or ""))
end

function done(summary, latency, requests)
  wrk_json(summary, latency)
end
