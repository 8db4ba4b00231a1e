-- post.lua's request, plus per-status counting for the overload run: 2xx, 503 (and how many of those lack
-- Retry-After), other. Defining response() makes wrk hand every reply to Lua, which costs it some speed: fine here,
-- where the point is to offer far more than the server can take. done() prints "WRKJSON {...}".

-- The request (method, body, headers) and wrk_json() come from post.lua, beside this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "post.lua")

local threads = {}
ok, shed, shed_no_retry, other = 0, 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  elseif status == 503 then
    shed = shed + 1
    if headers["Retry-After"] == nil and headers["retry-after"] == nil then shed_no_retry = shed_no_retry + 1 end
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = {ok = 0, shed = 0, shed_no_retry = 0, other = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  wrk_json(summary, latency, string.format(',"ok":%d,"shed":%d,"shed_no_retry":%d,"other":%d',
    t.ok, t.shed, t.shed_no_retry, t.other))
end
