-- One event per request from a million distinct users (a fresh body per request).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"user_id":"user-%07d","event_type":"tap","event_time":%d,"payload":{"x":%d}}',
    counter % 1000000, 1714564800000 + counter, counter)
  return wrk.format(nil, nil, nil, body)
end
