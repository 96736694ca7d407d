-- The REST workload of `npm run bench` for wrk: what a deploy script does. Requests
-- alternate between acquiring a fresh service name (`POST /api/v1alpha1/lock`
-- {"service","who"}) and releasing an id an acquire answered, by the guide's route
-- (`GET /api/v1alpha1/unlock/{id}`).
--
--   wrk -t1 -c50 -d5s -s bench/wrk/acquire-release.lua http://127.0.0.1:PORT -- TAG
--
-- wrk's request() does not say which connection it is for, so the ids go through one queue
-- per thread: each 201 puts its id in, and the next request any connection of the thread
-- sends releases the oldest id waiting (or acquires a fresh name when none waits). Each id
-- is released once, the mix is half acquires and half releases (up to the ids still in
-- flight when the run stops), and no two acquires ever name the same service. TAG makes the
-- names unique across runs: TAG-<thread>-<n>.
--
-- done() prints one line `WRK_JSON {...}` that bench/peers.ts reads: requests, duration,
-- wrk's socket and status errors, acquires and releases answered, other answers, and the
-- per-request latency percentiles (microseconds).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local tag = "wrk"
local counter = 0
local queue = {}
local head, tail = 1, 0
acquired, released, unexpected = 0, 0, 0

local LOCK = "/api/v1alpha1/lock"
local UNLOCK = "/api/v1alpha1/unlock/"
local HEADERS = { ["Content-Type"] = "application/json" }

function init(args)
  if args[1] ~= nil then
    tag = args[1]
  end
end

function request()
  if head <= tail then
    local id = queue[head]
    queue[head] = nil
    head = head + 1
    return wrk.format("GET", UNLOCK .. id, nil, nil)
  end
  counter = counter + 1
  local body = string.format('{"service":"%s-%d-%d","who":"wrk"}', tag, tid, counter)
  return wrk.format("POST", LOCK, HEADERS, body)
end

function response(status, headers, body)
  if status == 201 then
    local id = string.match(body, '"id":"([^"]+)"')
    if id ~= nil then
      acquired = acquired + 1
      tail = tail + 1
      queue[tail] = id
      return
    end
  elseif status == 200 and string.find(body, '"success":true', 1, true) then
    released = released + 1
    return
  end
  unexpected = unexpected + 1
end

function done(summary, latency, requests)
  local a, r, u = 0, 0, 0
  for _, thread in ipairs(threads) do
    a = a + (thread:get("acquired") or 0)
    r = r + (thread:get("released") or 0)
    u = u + (thread:get("unexpected") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"durationUs":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,' ..
    '"statusErrors":%d,"timeouts":%d,"acquired":%d,"released":%d,"unexpected":%d,' ..
    '"p50Us":%d,"p90Us":%d,"p99Us":%d,"maxUs":%d,"meanUs":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, a, r, u,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
