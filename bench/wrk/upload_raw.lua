-- Raw-body upload of a unique synthetic PDF per request (bench/small_files.py).
--
--   WRK_PATH        target path and query, e.g. /upload?filename=scan.pdf
--   WRK_SIZE        file bytes (default 10240)
--   WRK_CONN_FIELD  a query parameter whose value differs per connection, "name=v1,v2,..."
-- plus WRK_TOKEN, WRK_EXPECT_BYTES and WRK_IDS_OUT (lib.lua). Run with -t equal to -c.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local lib = require("lib")

local size = tonumber(os.getenv("WRK_SIZE") or "10240")
local path, headers

function init(_args)
  path = os.getenv("WRK_PATH") or "/upload"
  local name, value = lib.conn_field()
  if name then
    path = path .. (path:find("?", 1, true) and "&" or "?") .. name .. "=" .. value
  end
  headers = lib.headers("application/pdf")
end

function request()
  local body = lib.unique_pdf(size)
  lib.mark()
  return wrk.format("POST", path, headers, body)
end

setup = lib.setup
response = lib.response
done = lib.done
