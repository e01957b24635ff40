"""Pure figure and table builders: data in, Plotly figures or DataFrames out.  No Dash callbacks here."""
