-- Multipart upload of a unique synthetic PDF per request (bench/small_files.py).
--
--   WRK_PATH        target path and query, e.g. /upload or /api/v1/documents
--   WRK_SIZE        file bytes (default 10240)
--   WRK_FIELDS      static form fields sent before the file, "a=1&b=2"
--   WRK_CONN_FIELD  one more field whose value differs per connection, "name=v1,v2,..."
-- plus WRK_TOKEN, WRK_EXPECT_BYTES and WRK_IDS_OUT (lib.lua). Run with -t equal to -c.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local lib = require("lib")

local path = os.getenv("WRK_PATH") or "/upload"
local size = tonumber(os.getenv("WRK_SIZE") or "10240")
local head, tail, headers

local function part(boundary, name, value)
  return "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. name
    .. "\"\r\n\r\n" .. value .. "\r\n"
end

function init(_args)
  local boundary = "bench" .. lib.random_hex(16)
  local fields = {}
  for name, value in (os.getenv("WRK_FIELDS") or ""):gmatch("([^&=]+)=([^&]*)") do
    fields[#fields + 1] = part(boundary, name, value)
  end
  local name, value = lib.conn_field()
  if name then fields[#fields + 1] = part(boundary, name, value) end
  -- The fields come first, as browsers and httpx send them: the vault checks the
  -- patient before it reads the file.
  head = table.concat(fields) .. "--" .. boundary
    .. "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.pdf\""
    .. "\r\nContent-Type: application/pdf\r\n\r\n"
  tail = "\r\n--" .. boundary .. "--\r\n"
  headers = lib.headers("multipart/form-data; boundary=" .. boundary)
end

function request()
  local body = head .. lib.unique_pdf(size) .. tail
  lib.mark()
  return wrk.format("POST", path, headers, body)
end

setup = lib.setup
response = lib.response
done = lib.done
