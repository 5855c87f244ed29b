-- Downloads by id, round-robin over a list (bench/small_files.py).
--
--   WRK_IDS_FILE      ids, one per line
--   WRK_PATH_TEMPLATE path with {id}, e.g. /files/{id} or /api/v1/documents/{id}/content
-- plus WRK_TOKEN and WRK_EXPECT_BYTES (lib.lua). Run with -t equal to -c.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local lib = require("lib")

local paths, position, headers = {}, 0, nil

function init(_args)
  local template = os.getenv("WRK_PATH_TEMPLATE") or "/files/{id}"
  local ids_file = assert(os.getenv("WRK_IDS_FILE"), "WRK_IDS_FILE is not set")
  for id in io.lines(ids_file) do
    if id ~= "" then paths[#paths + 1] = (template:gsub("{id}", id)) end
  end
  assert(#paths > 0, "no ids to download")
  -- Each thread starts somewhere else, so the threads do not walk the list in step.
  local r = lib.random_bytes(4)
  position = (r:byte(1) * 16777216 + r:byte(2) * 65536 + r:byte(3) * 256 + r:byte(4)) % #paths
  headers = lib.headers(nil)
end

function request()
  position = position % #paths + 1
  lib.mark()
  return wrk.format("GET", paths[position], headers)
end

setup = lib.setup
response = lib.response
done = lib.done
