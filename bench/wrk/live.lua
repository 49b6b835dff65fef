-- wrk script: GET /users/{product}/user-N/live-activity with a random user per request, as fast
-- as the connections allow (the saturation figure beside bench.pullgen's constant-rate one).
-- Environment: BENCH_PRODUCT, BENCH_KEY (the MCP key), BENCH_USERS, BENCH_LIMIT.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
  product = os.getenv("BENCH_PRODUCT")
  users = tonumber(os.getenv("BENCH_USERS") or "10000")
  limit = os.getenv("BENCH_LIMIT") or "20"
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "")
  math.randomseed(os.time())
end

function request()
  local path = string.format("/users/%s/user-%d/live-activity?limit=%s", product,
    math.random(0, users - 1), limit)
  return wrk.format("GET", path)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"ok":%d,"bad":%d,"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_timeout":%d,"err_status":%d,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    o, b, summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
