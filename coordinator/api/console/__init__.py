"""The web console's static files (index.html, console.css, console.js), served at /console.

Package data, no build step and nothing fetched at run time (GPU hosts are often air-gapped).
"""
