-- wrk: POST /v1/customers, each request a new customer with an address of
-- its own (the thread's number and start time, and a counter), so that no
-- registration is refused as email_taken: the cost of a registration, its
-- e-mail claim and, with crypto-shredding, its data key and sealed fields.
wrk.method = "POST"
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
	wrk.body = '{"email":"r' .. prefix .. '-' .. counter .. '@example.com","first_name":"Ada","last_name":"Lovelace","phone":"+14155552671"}'
	return wrk.format()
end
