"""Reporting: collect run folders, tabulate, plot, and write Markdown, HTML and JSON."""
