"""Running NIMs: images, containers and host processes (no Typer here; the CLI is nimctl.cli).

    spec = planning.plan_run(model="tiny-vlm", runtime="docker") # resolve, choose the profile
    started = manage.start_instance(spec, on_build=listener)     # ensure the image, start
    manage.wait_for(started, timeout=900, on_event=listener)     # live, then ready
    manage.list_instances(), manage.instance_logs(name), manage.stop_instance(name)

Modules: ``images`` (build with progress events), ``context`` (build contexts), ``spec``
(what to run), ``planning`` (``plan_run``: from ``nimctl run``'s arguments to a spec),
``placement`` (how each runtime gives the server its model, paths and GPUs), ``gpu_request``
(``--gpus``), ``container`` (the one container description), ``dry_run`` (``--dry-run``'s
command line), ``docker_client`` (connecting, and the SDK's errors as nimctl's), ``base`` (the
runtime interface), ``docker_runtime`` / ``local_runtime`` (the two runtimes),
``processes`` (a local instance's process tree), ``instances`` (what both share),
``readiness`` (the wait), ``manage`` (both runtimes behind one API), ``launcher`` (the parent
of a local instance's server), ``credentials`` (each instance's API key and TLS files) and
``certs`` (the instance's own CA and certificates).
"""
