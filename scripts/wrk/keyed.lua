-- wrk: POST /v1/orders as create.lua, each with an Idempotency-Key of its
-- own: the thread's number and start time, and a counter, so that no two
-- requests of a run share a key (a shared one would be a retry that waits
-- for the first's answer).
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local prefix
local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("tid", tostring(threads) .. "-" .. tostring(os.time()))
end
function init(args)
	prefix = wrk.thread:get("tid")
end
function request()
	counter = counter + 1
	wrk.headers["Idempotency-Key"] = "k-" .. prefix .. "-" .. counter
	return wrk.format()
end
