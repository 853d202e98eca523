"""Media: acquiring videos (yt-dlp) and probing and decoding them (ffmpeg, decord)."""
