"""lakeFS as the home of datakiln's versioned data.

One small module per concern: `binary` (the pinned server binary), `server`
(a local server in a data folder), `credentials` (where keys come from),
`client` (the one place that talks to the server, with retries and clear
errors), `uri` (lakefs:// addresses), `sync` (uploading changed files),
`pin` (raw inputs pinned to commits) and `publish` (the publish target).
"""
