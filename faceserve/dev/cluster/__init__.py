"""A laptop-sized copy of the production topology: nginx on 127.0.0.1 load-balancing several `bentoml serve`
instances that share one local Triton (or each run the embedded onnxruntime backend) and one local
PostgreSQL holding the gallery.

    from faceserve.dev.cluster import Cluster
    with Cluster(instances=2) as cluster:          # backend="embedded" for no Triton
        cluster.url                                # nginx; cluster.nginx.access_log names the instance per request
        cluster.postgres.restart()                 # the shared store (faceserve.dev.postgres_local), same port and data
        cluster.instances[0].kill(); cluster.instances[0].start()

    python -m faceserve.dev.cluster --instances 2      # make cluster

What belongs here: starting and stopping the local deployment and nginx's configuration. Not here: the
production form of the same topology (bentos/kubernetes/, docs/deploy.md) and the single servers it is
made of (faceserve.dev.devserver, faceserve.dev.triton_local, faceserve.dev.postgres_local).
"""

from faceserve.dev.cluster.cluster import Cluster, Instance
from faceserve.dev.cluster.nginx import Nginx, NginxConfig, NginxError

__all__ = ["Cluster", "Instance", "Nginx", "NginxConfig", "NginxError"]
