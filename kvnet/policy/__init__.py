"""MultiNetworkPolicy enforcement on pod attachments (docs/policy.md).

``model`` parses policies, pods and namespaces and computes the wanted rules per pod
attachment (pure); ``nft`` renders them to one nftables table per pod netns and applies
them; ``agent`` is the node agent that lists and watches the API (``kvnet policy``).
"""
