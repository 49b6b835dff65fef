-- wrk script: single-event POST /webhook/{id}, a unique uuid per request, statuses counted.
-- Environment: BENCH_SECRET (x-posthog-secret), BENCH_BODY (printf template from
-- bench/common.py: %.6f timestamp, %d session, %d user, %s uuid), BENCH_SESSIONS.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  n = 0
  ok = 0
  bad = 0
  template = os.getenv("BENCH_BODY")
  sessions = tonumber(os.getenv("BENCH_SESSIONS") or "500")
  ts = os.time()
  run = tonumber(os.getenv("BENCH_RUN") or "0")
  wrk.headers["x-posthog-secret"] = os.getenv("BENCH_SECRET") or ""
  wrk.headers["content-type"] = "application/json"
end

function request()
  n = n + 1
  local uuid = string.format("%08x-%04x-4000-8000-%012x", run, tid, n)
  local s = n % sessions
  local b = string.format(template, ts, s, s, uuid)
  return wrk.format("POST", nil, nil, b)
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
