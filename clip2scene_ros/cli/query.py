"""``clip2scene query "TEXT"``: ask a running segment_node which points match a phrase."""

from __future__ import annotations

import argparse
import json
import time

HELP = "send a free-text query to a running segment_node (/query_text) and print the answer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the phrase, e.g. 'a parked car'")
    parser.add_argument("--service", default="/query_text", help="service name (default /query_text)")
    parser.add_argument("--threshold", type=float, default=0.0, help="minimum relevance (0: >= 0.5)")
    parser.add_argument("--top-k", type=int, default=0, help="return the k best points instead (0 = off)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the service")
    parser.add_argument("--json", action="store_true", help="print the full answer as one JSON line")


def call(
    text: str, service: str = "/query_text", threshold: float = 0.0, top_k: int = 0, timeout: float = 15.0
):
    """Call the service once; returns the QueryText response (raises TimeoutError)."""
    import rclpy
    from rclpy.node import Node

    from clip2scene_interfaces.srv import QueryText

    if top_k < 0:
        raise ValueError("--top-k must be >= 0")
    started = not rclpy.ok()
    if started:
        rclpy.init()
    node = Node(f"clip2scene_query_{int(time.time() * 1e3) % 100000}")
    try:
        client = node.create_client(QueryText, service)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(
                f"service {service} is not available after {timeout:.0f} s; is segment_node running "
                "(clip2scene segment / ros2 run clip2scene_ros segment_node) in the same ROS_DOMAIN_ID?"
            )
        req = QueryText.Request(text=text, threshold=float(threshold), top_k=int(top_k))
        future = client.call_async(req)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        if not future.done():
            raise TimeoutError(f"no answer from {service} within {timeout:.0f} s")
        return future.result()
    finally:
        node.destroy_node()
        if started:
            rclpy.try_shutdown()


def run(args: argparse.Namespace) -> int:
    try:
        res = call(args.text, args.service, args.threshold, args.top_k, args.timeout)
    except (TimeoutError, ValueError) as e:
        print(f"clip2scene query: {e}")
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "success": res.success,
                    "message": res.message,
                    "frame_id": res.header.frame_id,
                    "stamp": res.header.stamp.sec + res.header.stamp.nanosec * 1e-9,
                    "indices": list(res.indices),
                    "scores": [round(float(s), 5) for s in res.scores],
                    "instance_centroids": [[c.x, c.y, c.z] for c in res.instance_centroids],
                    "instance_sizes": [[s.x, s.y, s.z] for s in res.instance_sizes],
                }
            )
        )
    else:
        print(res.message)
        if res.success:
            for i, (c, s) in enumerate(zip(res.instance_centroids, res.instance_sizes, strict=False)):
                print(
                    f"  instance {i}: centre ({c.x:.2f}, {c.y:.2f}, {c.z:.2f}) m, "
                    f"size {s.x:.2f} x {s.y:.2f} x {s.z:.2f} m"
                )
    return 0 if res.success else 1
