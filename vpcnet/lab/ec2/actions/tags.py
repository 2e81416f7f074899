"""Tag actions: CreateTags and DeleteTags on any taggable resource."""

from __future__ import annotations

from vpcnet.lab.ec2.actions.common import Answer, Handler, Params, required
from vpcnet.lab.ec2.state import Cloud


class TagActions:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def handlers(self) -> dict[str, Handler]:
        return {"CreateTags": self.create_tags, "DeleteTags": self.delete_tags}

    def create_tags(self, p: Params) -> Answer:
        resources = required(p, "Resources")
        tags = {required(t, "Key"): t.get("Value", "") for t in required(p, "Tags")}
        self.cloud.create_tags(resources, tags)
        return {}

    def delete_tags(self, p: Params) -> Answer:
        resources = required(p, "Resources")
        tags = [(required(t, "Key"), t.get("Value")) for t in p.get("Tags", [])]
        self.cloud.delete_tags(resources, tags)
        return {}
