-- wrk script for POST /route at a fixed offered rate (ROUTE_RATE requests/s in all, one wrk thread).
--
-- Requests leave on a schedule: slot k is due at start + k / rate. When a connection is free
-- (its previous answer arrived) it takes the next slot and wrk's delay() holds it until that
-- moment; a slot already past is sent at once and counted as late. Enough connections (8) stay
-- open that a slow answer delays no other request, so the rate offered does not depend on the
-- server's latency. (The first version of this script waited a fixed 10 ms after each answer on
-- two connections: the offered rate was 2 * 1000 / (10 + latency), 143/s at 4 ms, never 200/s.)
--
-- wrk measures each request from the moment it is written, so a late request's wait for its
-- slot is not in the latency figures: `late` (printed at the end) says how many there were.
-- The texts come from a file of JSON bodies, one a line (bench/router.py writes it).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } route_timespec;
int clock_gettime(int clock, route_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local now_buffer = ffi.new("route_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_buffer)
  return tonumber(now_buffer.tv_sec) * 1000 + tonumber(now_buffer.tv_nsec) / 1e6
end

local bodies = {}
local i = 0
local interval_ms = 1000 / tonumber(os.getenv("ROUTE_RATE") or "200")
local token = os.getenv("ROUTE_TOKEN") or ""
local next_slot = nil
late = 0
sent = 0
bad = 0

for line in io.lines(os.getenv("ROUTE_BODIES")) do
  bodies[#bodies + 1] = line
end

local threads = {}

setup = function(thread)
  threads[#threads + 1] = thread
end

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/route", {["Content-Type"] = "application/json",
                                       ["Authorization"] = "Bearer " .. token}, bodies[i])
end

delay = function()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now
  end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  sent = sent + 1
  local wait = slot - now
  if wait < -1 then
    late = late + 1
  end
  if wait <= 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end

response = function(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
    io.stderr:write("status " .. status .. "\n")
  end
end

done = function(summary, latency, requests)
  local late_total, sent_total = 0, 0
  for _, thread in ipairs(threads) do
    late_total = late_total + (thread:get("late") or 0)
    sent_total = sent_total + (thread:get("sent") or 0)
  end
  io.write(string.format("route: sent %d late %d\n", sent_total, late_total))
end
