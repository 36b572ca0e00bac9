-- wrk script: GET /tasks/$TASK_ID with a bearer token from $TOKEN.
wrk.method = "GET"
wrk.path = "/tasks/" .. os.getenv("TASK_ID")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
