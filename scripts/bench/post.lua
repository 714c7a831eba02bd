-- wrk script for scripts/bench.sh: the same POST to every target, and a machine-readable
-- summary line at the end.
--
-- Environment:
--   BENCH_BODY_FILE  request body (JSON)
--   BENCH_PATH       request path (default /v1/messages)
--   BENCH_KEY        client API key (sent to every target, so requests are byte-identical)
--   BENCH_STREAM     "1": add `x-bench-stream: 1`, which the mock maps to its SSE answer
--   BENCH_OPENAI     "1": an OpenAI client (with BENCH_PATH=/v1/chat/completions): the key
--                    goes in `Authorization: Bearer`, and no anthropic-version is sent
--
-- No response() callback on purpose: defining one makes wrk keep every response's headers
-- and body for Lua, which costs the load generator CPU. wrk still counts non-2xx/3xx
-- answers (summary.errors.status), and bench.sh checks the bytes of one answer per target
-- with curl before loading it.

local function slurp(path)
   local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
   local data = f:read("*a")
   f:close()
   return data
end

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/messages"
wrk.body = slurp(os.getenv("BENCH_BODY_FILE"))
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_OPENAI") == "1" then
   wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")
else
   wrk.headers["anthropic-version"] = "2023-06-01"
   wrk.headers["x-api-key"] = os.getenv("BENCH_KEY") or "none"
end
if os.getenv("BENCH_STREAM") == "1" then
   wrk.headers["x-bench-stream"] = "1"
   wrk.headers["Accept"] = "text/event-stream"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d max_us=%d " ..
      "err_status=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
