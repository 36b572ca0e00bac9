-- wrk script: POST /tasks with a bearer token from $TOKEN.
wrk.method = "POST"
wrk.path = "/tasks"
wrk.body = '{"mandate": "benchmark mandate", "max_ticks": 5}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
