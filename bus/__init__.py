"""The NATS JetStream bus: connection, streams, durable consumers, settling messages, job history."""
