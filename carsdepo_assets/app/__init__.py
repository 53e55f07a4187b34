"""The page for the people who price cars (``carsdepo app``): check photos, watch monitoring,
compare models.

The Streamlit script (``page.py``) only lays out what the plain modules here compute: photos
answered by the champion (``photos``), drift decisions, KPIs and model history read from the
state folder and the registry (``monitoring``, ``models``), and how the server is started
(``launch``). Those modules import neither Streamlit nor Dagster, so tests need no browser.
"""
