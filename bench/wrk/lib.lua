-- Shared by the bench's wrk scripts (wrk 4.x with LuaJIT): per-request latency,
-- outcome counting and the one JSON line that done() prints for bench/small_files.py.
--
-- Why latency is timed here and not taken from wrk's own histogram: wrk 4.x runs
-- stats_correct() on that histogram before done() sees it (and before it prints its
-- summary). For every response slower than twice the mean interval per connection it
-- adds synthetic samples (coordinated-omission correction), so its percentiles are not
-- per-request ones. They are still reported, as "wrk_co_corrected_ms", for comparison.
--
-- Timing in Lua pairs request() with response(), which is only unambiguous with one
-- connection per thread: run these scripts with -t equal to -c.
--
-- Environment (all optional):
--   WRK_TOKEN         bearer token, sent as Authorization (the vault needs it, the peer not)
--   WRK_EXPECT_BYTES  a 2xx response whose body has another length counts as wrong_length
--   WRK_IDS_OUT       file that receives the "id" of every 2xx response, one per line

local ffi = require("ffi")

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]

local M = {}
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

-- Bytes from the kernel: seeding math.random with the clock would give two runs in
-- the same second the same bodies, and the vault refuses a patient's duplicate content.
function M.random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local data = f:read(n)
  f:close()
  return data
end

function M.random_hex(n)
  return (M.random_bytes(n):gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function M.headers(content_type)
  local headers = {}
  if content_type then headers["Content-Type"] = content_type end
  local token = os.getenv("WRK_TOKEN")
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return headers
end

-- WRK_CONN_FIELD="name=v1,v2,...": this connection's (thread's) value, so each
-- connection can upload for its own patient, as each httpx client does.
function M.conn_field()
  local spec = os.getenv("WRK_CONN_FIELD")
  if not spec or spec == "" then return nil, nil end
  local name, list = spec:match("^([^=]+)=(.*)$")
  local values = {}
  for value in list:gmatch("[^,]+") do values[#values + 1] = value end
  return name, values[(thread_index or 0) % #values + 1]
end

-- A synthetic PDF of `size` bytes: the magic, a unique token, then this thread's random
-- filler, so every request's content (and SHA-256) differs at the cost of one concat.
local filler, nonce, counter
function M.unique_pdf(size)
  local magic = "%PDF-1.7\n"
  if not filler then
    nonce = M.random_hex(8)
    filler = M.random_bytes(math.max(0, size - #magic - 32))
    counter = 0
  end
  counter = counter + 1
  return magic .. string.format("%s%08x%08x", nonce, thread_index or 0, counter) .. filler
end

-- ---------------------------------------------------------------- per thread

latencies, outcomes, ok, ids = {}, {}, 0, {}
local started
local expect_bytes = tonumber(os.getenv("WRK_EXPECT_BYTES") or "")
local keep_ids = (os.getenv("WRK_IDS_OUT") or "") ~= ""

function M.mark()
  started = now()
end

function M.response(status, _headers, body)
  local elapsed = now() - started
  local outcome
  if status < 200 or status > 299 then
    outcome = "http_" .. status
  elseif expect_bytes and #body ~= expect_bytes then
    outcome = "wrong_length"
  end
  if outcome then
    outcomes[outcome] = (outcomes[outcome] or 0) + 1
    return
  end
  ok = ok + 1
  latencies[#latencies + 1] = elapsed * 1000.0
  if keep_ids then
    local id = body:match('^%s*{%s*"id"%s*:%s*"([^"]+)"')
    if id then ids[#ids + 1] = id end
  end
end

-- ---------------------------------------------------------------- main state

local threads = {}

function M.setup(thread)
  thread:set("thread_index", #threads)
  threads[#threads + 1] = thread
end

-- Linear interpolation between closest ranks: common.percentile's (numpy's) definition.
local function percentile(sorted, pct)
  if #sorted == 0 then return 0 / 0 end
  local rank = (#sorted - 1) * pct / 100
  local low, high = math.floor(rank), math.ceil(rank)
  return sorted[low + 1] + (sorted[high + 1] - sorted[low + 1]) * (rank - low)
end

local function encode(value)
  if type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do
      parts[#parts + 1] = string.format("%q:%s", k, encode(v))
    end
    table.sort(parts)
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(value) == "number" then
    if value ~= value then return "null" end
    return string.format("%.6g", value)
  end
  return string.format("%q", tostring(value))
end

local function round3(x) return math.floor(x * 1000 + 0.5) / 1000 end

function M.done(summary, latency, _requests)
  local all, errors, total_ok, all_ids = {}, {}, 0, {}
  for _, thread in ipairs(threads) do
    for _, ms in ipairs(thread:get("latencies")) do all[#all + 1] = ms end
    for outcome, n in pairs(thread:get("outcomes")) do errors[outcome] = (errors[outcome] or 0) + n end
    total_ok = total_ok + thread:get("ok")
    for _, id in ipairs(thread:get("ids")) do all_ids[#all_ids + 1] = id end
  end
  -- errors.status is left out: it is the > 399 subset of the http_* counts above.
  for _, kind in ipairs({ "connect", "read", "write" }) do
    if summary.errors[kind] > 0 then errors[kind] = summary.errors[kind] end
  end
  table.sort(all)
  local sum = 0
  for _, ms in ipairs(all) do sum = sum + ms end
  local duration = summary.duration / 1e6
  local out = os.getenv("WRK_IDS_OUT")
  if out and out ~= "" then
    local f = assert(io.open(out, "w"))
    if #all_ids > 0 then f:write(table.concat(all_ids, "\n"), "\n") end
    f:close()
  end
  io.write(encode({
    threads = #threads,
    duration_s = round3(duration),
    requests = summary.requests,
    ok = total_ok,
    requests_per_s = round3(total_ok / duration),
    errors = errors,
    -- wrk's "timeout": responses slower than --timeout; they are in ok and latency too.
    over_timeout = summary.errors.timeout,
    latency_ms = {
      count = #all,
      p50 = round3(percentile(all, 50)),
      p95 = round3(percentile(all, 95)),
      p99 = round3(percentile(all, 99)),
      max = round3(all[#all] or 0 / 0),
      mean = round3(#all > 0 and sum / #all or 0 / 0),
    },
    wrk_co_corrected_ms = {
      p50 = latency:percentile(50) / 1000,
      p95 = latency:percentile(95) / 1000,
      p99 = latency:percentile(99) / 1000,
    },
  }), "\n")
end

return M
