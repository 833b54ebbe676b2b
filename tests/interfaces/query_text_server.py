"""A QueryText server used by the interface round-trip test.

It scores each word of the request by its length and answers the words at or above the
threshold, so the client can check every response field against a value it computes itself.
"""

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from clip2scene_interfaces.srv import QueryText


class WordLengthServer(Node):
    def __init__(self) -> None:
        super().__init__("query_text_test_server")
        self.create_service(QueryText, "query_text", self.answer)
        print("ready", flush=True)

    def answer(self, request: QueryText.Request, response: QueryText.Response) -> QueryText.Response:
        words = request.text.split()
        scored = [(i, float(len(w))) for i, w in enumerate(words)]
        keep = [(i, s) for i, s in scored if s >= request.threshold]
        if request.top_k:
            keep = sorted(keep, key=lambda p: -p[1])[: request.top_k]
        response.success = bool(words)
        response.message = f"{len(keep)} of {len(words)} words" if words else "empty text"
        response.indices = [i for i, _ in keep]
        response.scores = [s for _, s in keep]
        response.header.frame_id = "words"
        return response


def main() -> None:
    rclpy.init()
    node = WordLengthServer()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
