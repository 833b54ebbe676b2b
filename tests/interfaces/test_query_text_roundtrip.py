"""QueryText round trip between two real processes over DDS (server and client)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
HERE = Path(__file__).resolve().parent

CLIENT = textwrap.dedent(
    """
    import json, sys, time
    import rclpy
    from clip2scene_interfaces.srv import QueryText
    rclpy.init()
    node = rclpy.create_node("query_text_test_client")
    client = node.create_client(QueryText, "query_text")
    if not client.wait_for_service(timeout_sec=20.0):
        print(json.dumps({"error": "service not discovered"})); sys.exit(3)
    answers = []
    for text, threshold, top_k in [("a parked red car", 3.0, 0), ("one two three", 0.0, 2), ("", 0.0, 0)]:
        req = QueryText.Request(text=text, threshold=threshold, top_k=top_k)
        future = client.call_async(req)
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        r = future.result()
        answers.append({"success": r.success, "message": r.message, "indices": list(r.indices),
                        "scores": [float(s) for s in r.scores], "frame": r.header.frame_id})
    print(json.dumps(answers))
    node.destroy_node(); rclpy.shutdown()
    """
)


def test_query_text_round_trip(ros_env):
    server = subprocess.Popen(
        [sys.executable, str(HERE / "query_text_server.py")],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = subprocess.run([sys.executable, "-c", CLIENT], env=ros_env, capture_output=True, text=True, timeout=90)
        assert client.returncode == 0, client.stdout + client.stderr
        import json

        answers = json.loads(client.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert answers[0] == {
        "success": True,
        "message": "3 of 4 words",
        "indices": [1, 2, 3],
        "scores": [6.0, 3.0, 3.0],
        "frame": "words",
    }
    assert answers[1]["indices"] == [2, 0] and answers[1]["scores"] == [5.0, 3.0]
    assert answers[2]["success"] is False and answers[2]["message"] == "empty text"
