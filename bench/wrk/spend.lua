-- wrk script of the spend benchmark (bench/spend.py). Run with as many threads as connections
-- (-t C -c C), so each thread drives one connection and the hold-then-capture pairs can keep
-- their state per thread.
--
-- Arguments after `--`: mode accounts token run_id [hot_account] [batch_size] [first_account]
--   debit        POST /api/v1/accounts/{random}/debits (one credit, unique Idempotency-Key)
--   hold         POST .../holds, then POST /api/v1/holds/{id}/capture on the same connection
--   balance      GET  /api/v1/accounts/{random}/balance
--   batch        POST /api/v1/debits/batch with batch_size debits over random accounts
--   bare_debit   POST /bench/bare/debit/{random id}   (the bare ceiling, bench/urls.py)
--   bare_read    GET  /bench/bare/balance/{random}
-- Accounts are drawn from first_account (default 1) to first_account + accounts - 1; with
-- hot_account > 0 every request goes to that one account.
-- done() prints one line "WRKJSON {...}" with counts per status and latency percentiles.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

local mode, accounts, token, run_id, hot, batch_size, first
local counter = 0
local pending_hold = nil
local last_kind = nil
statuses = {}
captures = 0

function init(args)
  mode = args[1]
  accounts = tonumber(args[2])
  token = args[3]
  run_id = args[4]
  hot = tonumber(args[5] or "0")
  batch_size = tonumber(args[6] or "0")
  first = tonumber(args[7] or "1")
  math.randomseed(os.time() * 1000 + thread_id * 7919)
end

local function pick()
  if hot > 0 then
    return hot
  end
  return math.random(first, first + accounts - 1)
end

local function public_id(n)
  return string.format("acct_bench%015d", n)
end

local function next_key()
  counter = counter + 1
  return run_id .. "-" .. thread_id .. "-" .. counter
end

-- A request with a body says its type; a GET has none, as a real client sends it.
local function headers(with_key, with_body)
  local h = {}
  h["Authorization"] = "Bearer " .. token
  if with_body ~= false then
    h["Content-Type"] = "application/json"
  end
  if with_key then
    h["Idempotency-Key"] = next_key()
  end
  return h
end

local function batch_body()
  local items = {}
  for i = 1, batch_size do
    items[i] = string.format(
      '{"account_id":"%s","idempotency_key":"%s","credits":1,"reference":"bench"}',
      public_id(pick()), next_key())
  end
  return '{"debits":[' .. table.concat(items, ",") .. ']}'
end

function request()
  if mode == "debit" then
    last_kind = "debit"
    return wrk.format("POST", "/api/v1/accounts/" .. public_id(pick()) .. "/debits", headers(true),
      '{"credits":1,"reference":"bench"}')
  elseif mode == "hold" then
    if pending_hold then
      local hold = pending_hold
      pending_hold = nil
      last_kind = "capture"
      return wrk.format("POST", "/api/v1/holds/" .. hold .. "/capture", headers(true), "{}")
    end
    last_kind = "hold"
    return wrk.format("POST", "/api/v1/accounts/" .. public_id(pick()) .. "/holds", headers(true),
      '{"credits":1,"reference":"bench"}')
  elseif mode == "balance" then
    last_kind = "balance"
    return wrk.format("GET", "/api/v1/accounts/" .. public_id(pick()) .. "/balance", headers(false, false))
  elseif mode == "batch" then
    last_kind = "batch"
    return wrk.format("POST", "/api/v1/debits/batch", headers(false), batch_body())
  elseif mode == "bare_debit" then
    last_kind = "bare_debit"
    return wrk.format("POST", "/bench/bare/debit/" .. pick(), {}, "")
  elseif mode == "bare_read" then
    last_kind = "bare_read"
    return wrk.format("GET", "/bench/bare/balance/" .. public_id(pick()), {})
  end
  error("unknown mode " .. tostring(mode))
end

function response(status, hdrs, body)
  local key = last_kind .. ":" .. status
  statuses[key] = (statuses[key] or 0) + 1
  if last_kind == "hold" and status == 201 then
    pending_hold = string.match(body, '"id"%s*:%s*"(hold_[%w_]+)"')
  elseif last_kind == "capture" and status == 200 then
    captures = captures + 1
  elseif last_kind == "batch" and status == 200 then
    local _, created = string.gsub(body, '"status"%s*:%s*201', "")
    statuses["batch_item:201"] = (statuses["batch_item:201"] or 0) + created
  end
end

local function json_string(s)
  return '"' .. string.gsub(s, '"', '\\"') .. '"'
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for key, value in pairs(counts) do
      total[key] = (total[key] or 0) + value
    end
  end
  local parts = {}
  for key, value in pairs(total) do
    table.insert(parts, json_string(key) .. ":" .. value)
  end
  -- The latency at every 0.1 percent, so that the bench can merge the rounds of a scenario.
  local quantiles = {}
  for i = 1, 1000 do
    quantiles[i] = string.format("%d", latency:percentile(i / 10))
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},"quantiles_us":[%s]}\n',
    summary.requests, summary.duration, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    table.concat(quantiles, ",")))
end
