-- wrk: POST /v1/orders, the same CreateOrder body every time (orderd gives
-- each a new id). The body comes from $WRK_BODY, since it names a customer
-- the script registered first.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
