"""mitmdump addon for the bare baseline: stream SSE responses instead of buffering them."""


def responseheaders(flow):  # type: ignore[no-untyped-def]
    if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = True
