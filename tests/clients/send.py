"""Sends one event of each type through Segment's official Python SDK.

Usage: python3 send.py HOST WRITE_KEY PREFIX
Exit code 1 if the SDK reported an error.
"""
import sys

import segment.analytics as analytics

host, write_key, prefix = sys.argv[1:4]
errors = []
analytics.write_key = write_key
analytics.host = host
analytics.on_error = lambda error, items: errors.append(repr(error))
analytics.max_retries = 2

ctx = {"app": {"name": "py-app", "version": "1.2.3"}}
analytics.track("u-py", "Python Event", {"n": 1, "price": 9.99, "nested": {"list": [1, "two", {"x": None}]}, "name": "Ünïcödé ✓"},
                context=ctx, message_id=prefix + "-track")
analytics.identify("u-py", {"email": "py@example.com", "plan": "pro"}, message_id=prefix + "-identify")
analytics.page("u-py", "Docs", "Getting Started", {"url": "https://example.com/docs"}, message_id=prefix + "-page")
analytics.screen("u-py", "Onboarding", "Welcome", {"step": 1}, message_id=prefix + "-screen")
analytics.group("u-py", "g-acme", {"name": "Acme", "employees": 42}, message_id=prefix + "-group")
analytics.alias("prev-py", "u-py", message_id=prefix + "-alias")
analytics.flush()
analytics.shutdown()
if errors:
    print("errors:", errors, file=sys.stderr)
    sys.exit(1)
