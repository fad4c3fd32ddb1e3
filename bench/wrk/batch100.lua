-- 100 events per request, as SDKs send when they batch: the per-event cost.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local events = {}
for i = 1, 100 do
  events[i] = string.format(
    '{"user_id":"user-%06d","event_type":"screen_view","event_time":"2024-05-01T12:00:%02d.123Z","payload":{"screen":"home","app_version":"4.2.1","os":"android","n":%d}}',
    i, i % 60, i)
end
wrk.body = "[" .. table.concat(events, ",") .. "]"
