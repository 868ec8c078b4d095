"""Checks bridge from outside with Google's own Pub/Sub client (it reads PUBSUB_EMULATOR_HOST).

Usage: pubsub_check.py PROJECT IN_TOPIC OUT_SUBSCRIPTION DIRECT_SUBSCRIPTION COUNT

1. Publishes COUNT messages to IN_TOPIC (bridge forwards them to the topic that
   OUT_SUBSCRIPTION reads), with attributes and ordering keys.
2. Pulls COUNT messages from OUT_SUBSCRIPTION and from DIRECT_SUBSCRIPTION (written by
   bridge's own publisher) and prints each as one JSON line:
   {"from": "out"|"direct", "data_b64", "attributes", "ordering_key"}.
Unary pull is used because the emulator breaks reopened streaming pulls.
"""
import base64
import json
import sys

from google.cloud import pubsub_v1

project, in_topic, out_sub, direct_sub, count = sys.argv[1:6]
count = int(count)
publisher = pubsub_v1.PublisherClient(
    publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
)
subscriber = pubsub_v1.SubscriberClient()

futures = []
for n in range(count):
    futures.append(
        publisher.publish(
            publisher.topic_path(project, in_topic),
            bytes([0, 255]) + f"python-{n}".encode(),
            ordering_key=f"py-key-{n % 3}",
            seq=str(n),
            origin="python",
        )
    )
for future in futures:
    future.result(timeout=30)


def pull(subscription, label, wanted):
    path = subscriber.subscription_path(project, subscription)
    got = 0
    for _ in range(60):
        if got >= wanted:
            break
        response = subscriber.pull(subscription=path, max_messages=100, timeout=10)
        ack_ids = []
        for received in response.received_messages:
            message = received.message
            print(json.dumps({
                "from": label,
                "data_b64": base64.b64encode(message.data).decode(),
                "attributes": dict(message.attributes),
                "ordering_key": message.ordering_key,
            }), flush=True)
            ack_ids.append(received.ack_id)
            got += 1
        if ack_ids:
            subscriber.acknowledge(subscription=path, ack_ids=ack_ids)


pull(out_sub, "out", count)
pull(direct_sub, "direct", 1)
