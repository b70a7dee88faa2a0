"""Drives fluxgate with the `influxdb` Python client (InfluxDB 1.x), as an
application would, and prints what it read back as JSON for the Rust test.

    python_client.py HOST PORT DATABASE
"""
import json
import sys

from influxdb import InfluxDBClient


def main():
    host, port, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = InfluxDBClient(host=host, port=port, database=db, timeout=30)
    version = client.ping()
    client.create_database(db)
    points = []
    for i in range(100):
        points.append({"measurement": "cpu", "tags": {"host": "py"}, "time": 1_000_000_000 + i, "fields": {"v": float(i)}})
        points.append({"measurement": "mem", "tags": {"host": "py"}, "time": 1_000_000_000 + i, "fields": {"v": float(i)}})
    assert client.write_points(points, time_precision="s", batch_size=50)
    cpu = list(client.query("SELECT count(v) FROM cpu").get_points())
    mem = list(client.query("SELECT sum(v) FROM mem").get_points())
    measurements = [m["name"] for m in client.get_list_measurements()]
    print(json.dumps({
        "ping": version,
        "cpu_points": cpu[0]["count"],
        "mem_sum": mem[0]["sum"],
        "measurements": measurements,
    }))


if __name__ == "__main__":
    main()
