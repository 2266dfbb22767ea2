"""Shared core of runner and supervisor: project paths, ComfyUI launcher and client, errors, events, workflows."""
