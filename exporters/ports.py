"""Network defaults of meter's exporters.

Free of imports, so that the CLI can show them in ``--help`` without loading prometheus_client.
"""

#: Default port of ``meter serve`` and `start_http_server`. Prometheus keeps a wiki of exporter
#: ports ("Default port allocations"); its 9100-9999 block has been fully allocated since 2023,
#: so any port in it already belongs to some exporter, and registrations now continue above
#: 10000 (10047 is one). 10144 is clear of the exporters meter runs beside: node_exporter 9100,
#: dcgm-exporter 9400, nvidia_gpu_exporter 9835, Kepler 9102/28282, the OpenTelemetry
#: Prometheus exporter 9464, Prometheus 9090, Pushgateway 9091, Alertmanager 9093, cAdvisor and
#: Scaphandre 8080, vLLM 8000, Triton 8000-8002; of Zabbix 10050/10051, webmin 10000, Amanda
#: 10080-10083 and the Kubernetes components 10248-10259; and of the IANA services in
#: /etc/services. The live wiki was not checked when this was chosen: claim the port there
#: before a release.
DEFAULT_PORT = 10144
#: Loopback by default: exposing a node's metrics to the network is the operator's choice.
DEFAULT_ADDR = "127.0.0.1"
