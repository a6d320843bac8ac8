"""Answering over documents: the pipeline from files to a prefilled session, prompt templates, `ask` and
`summarize`, chat, evidence from attention, citations and the JSON contract."""
