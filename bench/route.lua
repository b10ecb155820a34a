-- wrk script for POST /route at a fixed pace: each connection sends one request, then waits
-- `pace_ms` before the next (wrk's delay()), so `connections * 1000 / pace_ms` is the offered rate.
-- The texts come from a file of JSON bodies, one a line (bench/router.py writes it).
local bodies = {}
local i = 0
local pace_ms = tonumber(os.getenv("ROUTE_PACE_MS") or "10")
local token = os.getenv("ROUTE_TOKEN") or ""

for line in io.lines(os.getenv("ROUTE_BODIES")) do
  bodies[#bodies + 1] = line
end

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/route", {["Content-Type"] = "application/json",
                                       ["Authorization"] = "Bearer " .. token}, bodies[i])
end

delay = function()
  return pace_ms
end

response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. "\n")
  end
end
