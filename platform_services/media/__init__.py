"""The media pipeline: pre-signed uploads, the transcode worker (an HLS ladder, poster and
thumbnail sprite, checksum dedupe), moderation, and the signed playlists that deliver it."""
