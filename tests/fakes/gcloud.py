"""A fake ``gcloud``: an injected runner that keeps the state the deploy commands change.

It understands exactly the commands ``ferry deploy`` issues and enforces what the real services
would: a binding's service-account member must exist, a Cloud Run service's policy exists only
once its function is deployed, creating an existing service account fails. Unknown commands fail
loudly, so a new kind of step cannot pass untested.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ferry.deploy.apply import RunResult


@dataclass
class FakeGcloud:
    project_number: str = "123456789012"
    enabled: set[str] = field(default_factory=set)
    service_accounts: set[str] = field(default_factory=set)
    policies: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    compute: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (collection, name) -> resource

    def writes(self) -> list[list[str]]:
        """The calls that change something (not describe/list/get)."""
        reads = ("describe", "list", "get-iam-policy")
        return [c for c in self.calls if not any(r in c for r in reads)]

    def __call__(self, argv: Sequence[str]) -> RunResult:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[0] == "gcloud", argv
        words = [a for a in argv[1:] if not a.startswith("--")]
        flags = dict((a[2:].split("=", 1) + [""])[:2] for a in argv[1:] if a.startswith("--"))
        match words:
            case ["projects", "describe", _]:
                return RunResult(0, self.project_number + "\n")
            case ["services", "enable", *apis]:
                self.enabled |= set(apis)
                return RunResult(0)
            case ["services", "list"]:
                return RunResult(0, "\n".join(sorted(self.enabled)) + "\n")
            case ["iam", "service-accounts", "create", name]:
                email = f"{name}@{flags['project']}.iam.gserviceaccount.com"
                if email in self.service_accounts:
                    return RunResult(1, stderr=f"ERROR: Service account {email} already exists")
                self.service_accounts.add(email)
                return RunResult(0)
            case ["iam", "roles", "create" | "update", name]:
                self.roles[name] = sorted(flags["permissions"].split(","))
                return RunResult(0)
            case ["iam", "roles", "describe", name]:
                if name not in self.roles:
                    return RunResult(1, stderr=f"NOT_FOUND: role {name}")
                return RunResult(0, json.dumps({"name": name, "includedPermissions": self.roles[name]}))
            case ["iam", "service-accounts", "describe", email]:
                ok = email in self.service_accounts
                return RunResult(0, json.dumps({"email": email})) if ok else RunResult(1, stderr="NOT_FOUND")
            case ["compute", collection, "create", name]:
                if (collection, name) in self.compute:
                    return RunResult(1, stderr=f"ERROR: The resource '{name}' already exists")
                missing = self._compute_missing(collection, flags)
                if missing:
                    return RunResult(1, stderr=f"ERROR: The resource '{missing}' was not found")
                self.compute[(collection, name)] = {"name": name, "id": str(4200 + len(self.compute)),
                                                    "flags": flags, "backends": [], "pathMatchers": []}
                return RunResult(0)
            case ["compute", collection, "describe", name]:
                res = self.compute.get((collection, name))
                if res is None:
                    return RunResult(1, stderr=f"ERROR: The resource '{name}' was not found")
                if flags.get("format") == "value(id)":
                    return RunResult(0, res["id"] + "\n")
                return RunResult(0, json.dumps(res))
            case ["compute", "backend-services", "add-backend", name]:
                neg = flags["network-endpoint-group"]
                if ("backend-services", name) not in self.compute or ("network-endpoint-groups", neg) not in self.compute:
                    return RunResult(1, stderr="ERROR: The resource was not found")
                self.compute[("backend-services", name)]["backends"].append(
                    {"group": f"regions/{flags['network-endpoint-group-region']}/networkEndpointGroups/{neg}"})
                return RunResult(0)
            case ["compute", "url-maps", "add-path-matcher", name]:
                if ("url-maps", name) not in self.compute:
                    return RunResult(1, stderr="ERROR: The resource was not found")
                self.compute[("url-maps", name)]["pathMatchers"].append({"name": flags["path-matcher-name"]})
                return RunResult(0)
            case ["iap", "web", verb]:
                target = flags["service"]
                if ("backend-services", target) not in self.compute:
                    return RunResult(1, stderr=f"NOT_FOUND: backend service {target}")
                return self(["gcloud", "iap-web", verb, target, *[a for a in argv if a.startswith("--")
                                                                 and not a.startswith("--service=")]])
            case [*resource, "add-iam-policy-binding", target]:
                problem = self._resource_problem(resource, target) or self._member_problem(flags["member"])
                if problem:
                    return RunResult(1, stderr=problem)
                bindings = self.policies.setdefault((" ".join(resource), target), [])
                for b in bindings:
                    if b["role"] == flags["role"]:
                        if flags["member"] not in b["members"]:
                            b["members"].append(flags["member"])
                        break
                else:
                    bindings.append({"role": flags["role"], "members": [flags["member"]]})
                return RunResult(0)
            case [*resource, "get-iam-policy", target]:
                problem = self._resource_problem(resource, target)
                if problem:
                    return RunResult(1, stderr=problem)
                bindings = self.policies.get((" ".join(resource), target), [])
                return RunResult(0, json.dumps({"bindings": bindings, "etag": "BwX"}))
            case ["functions", "deploy", name]:
                if self._member_problem(f"serviceAccount:{flags['service-account']}"):
                    return RunResult(1, stderr=f"service account {flags['service-account']} does not exist")
                labels = dict(kv.split("=", 1) for kv in flags.get("update-labels", "").split(",") if kv)
                self.functions[name] = {"name": name, "flags": flags, "labels": labels,
                                        "serviceConfig": {"uri": f"https://{name}-x7k2q-ew.a.run.app"}}
                return RunResult(0)
            case ["functions", "describe", name]:
                fn = self.functions.get(name)
                if fn is None:
                    return RunResult(1, stderr=f"ERROR: function {name} not found")
                if flags.get("format") == "value(serviceConfig.uri)":
                    return RunResult(0, fn["serviceConfig"]["uri"] + "\n")
                return RunResult(0, json.dumps(fn))
        return RunResult(2, stderr=f"FakeGcloud does not know: {' '.join(argv)}")

    def _compute_missing(self, collection: str, flags: dict[str, str]) -> str | None:
        """A reference to a compute resource that does not exist (the real API refuses it too)."""
        refs = {"url-maps": [("backend-services", flags.get("default-service", ""))],
                "target-https-proxies": [("url-maps", flags.get("url-map", "")),
                                         ("ssl-certificates", flags.get("ssl-certificates", ""))],
                "forwarding-rules": [("addresses", flags.get("address", "")),
                                     ("target-https-proxies", flags.get("target-https-proxy", ""))]}
        return next((n for c, n in refs.get(collection, []) if (c, n) not in self.compute), None)

    def _resource_problem(self, resource: list[str], target: str) -> str | None:
        if resource == ["run", "services"] and target not in self.functions:
            return f"NOT_FOUND: Cloud Run service {target} does not exist"
        if resource == ["iam", "service-accounts"] and target not in self.service_accounts:
            return f"NOT_FOUND: service account {target}"
        return None

    def _member_problem(self, member: str) -> str | None:
        email = member.removeprefix("serviceAccount:")
        if email.endswith(".iam.gserviceaccount.com") and "@gcp-sa-" not in email \
                and email not in self.service_accounts:
            return f"INVALID_ARGUMENT: Service account {email} does not exist."
        return None


def deployed_env(step: Any) -> dict[str, str]:
    """The environment a ``gcloud functions deploy`` step sets (``--set-env-vars``, either delimiter)."""
    (flag,) = [a for a in step.request if a.startswith("--set-env-vars=")]
    value = flag.removeprefix("--set-env-vars=")
    sep = "|" if value.startswith("^|^") else ","
    return dict(kv.split("=", 1) for kv in value.removeprefix("^|^").split(sep))
