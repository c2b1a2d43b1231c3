"""The OpenAI-compatible audio API as plain data and pure functions: typed requests
parsed from bodies, errors as OpenAI's error bodies, the model list, audio files in
and out. No trio, no sockets: gateway/openai_*.py carry them over HTTP."""
