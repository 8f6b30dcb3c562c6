-- wrk: changes of e-mail address. Each thread registers customers until it
-- has 256 (their ids read from the answers' Location), then sends POST
-- /v1/customers/{id}/email with a new address each time, going round its
-- customers, so that no change is refused as email_taken: the cost of a
-- change, its address's claim and the customer's append. The registrations
-- are part of the run; with -d long enough they are a small share of it.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local prefix
local ids = {}
local threads = 0
local want = 256
function setup(thread)
	threads = threads + 1
	thread:set("tid", tostring(threads) .. "-" .. tostring(os.time()))
end
function init(args)
	prefix = wrk.thread:get("tid")
end
function request()
	counter = counter + 1
	local address = 'e' .. prefix .. '-' .. counter .. '@example.com'
	if #ids < want then
		return wrk.format("POST", "/v1/customers", nil,
			'{"email":"' .. address .. '","first_name":"Ada","last_name":"Lovelace"}')
	end
	local id = ids[counter % #ids + 1]
	return wrk.format("POST", "/v1/customers/" .. id .. "/email", nil, '{"email":"' .. address .. '"}')
end
function response(status, headers, body)
	local location = headers["Location"] or headers["location"]
	if status == 201 and location and #ids < want then
		ids[#ids + 1] = string.match(location, "/v1/customers/([%x-]+)")
	end
end
