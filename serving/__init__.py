"""Serving: the only place that talks to the model server (vLLM multi-LoRA), the
adapter registry and hot-swap. Built in the chat issue; empty until then."""
