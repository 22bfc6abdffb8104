-- wrk script for bench/run.sh: POST a JSON body with extra headers.
-- Environment:
--   WRK_BODY_FILE      file whose contents are the request body (required)
--   WRK_HEADERS        extra headers, one "Name: value" per line (optional)
--   WRK_SESSIONS_FILE  file with one session id per line (optional); requests
--                      rotate through them in the X-Session-Id header
--   WRK_MIX_PLAIN      with WRK_SESSIONS_FILE: "1" alternates plain and
--                      session requests (used by the soak)

local function slurp(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local s = f:read("*a")
  f:close()
  return s
end

local body = slurp(assert(os.getenv("WRK_BODY_FILE"), "WRK_BODY_FILE not set"))
local headers = { ["Content-Type"] = "application/json" }
for line in (os.getenv("WRK_HEADERS") or ""):gmatch("[^\n]+") do
  local k, v = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if k then headers[k] = v end
end

local sessions = {}
local sf = os.getenv("WRK_SESSIONS_FILE")
if sf and sf ~= "" then
  for id in slurp(sf):gmatch("[^\n]+") do sessions[#sessions + 1] = id end
end
local mix = os.getenv("WRK_MIX_PLAIN") == "1"

-- Requests are built in init(): wrk only knows the Host header by then.
local plain
local with_session = {}
init = function(args)
  local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
  end
  plain = wrk.format("POST", nil, copy(headers), body)
  for i, id in ipairs(sessions) do
    local h = copy(headers)
    h["X-Session-Id"] = id
    with_session[i] = wrk.format("POST", nil, h, body)
  end
end

local n = 0
request = function()
  n = n + 1
  if #with_session == 0 then return plain end
  if mix and n % 2 == 0 then return plain end
  return with_session[(n % #with_session) + 1]
end
