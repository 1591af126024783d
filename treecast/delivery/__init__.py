"""The delivery engine: files and breaker notices to apps, load → compute → send → record.

`files.FileDelivery` (one try at one app's changes), `notices.send_notice`, the pure
change computation (`changes`), the load step around it (`loading`), the requests of
a run (`requests`) and reaching an app (`target`). It knows no Temporal: the activities
map its errors and pass its heartbeat callback.
"""
