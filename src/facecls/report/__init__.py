"""Report wing: a run folder's files and pages (HTML, Markdown, CSV, PNG) and the comparison of
runs. It reads what training wrote and never imports training."""
