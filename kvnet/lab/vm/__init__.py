"""The VM demo: a VM in a pod boots with one NIC per attachment (docs/vm-demo.md).

``scenario`` holds what a run is about, as data and pure builders (the networks, the NADs,
the VMI and its pod, the domain virt-launcher hands over, the CNI config); ``run`` the
stages from node set-up to teardown, ``kvnet demo``'s entry (``run.demo``) and the tests'
and benchmark's (``run.run_scenario``); ``report`` the result, its verdicts and the text
the demo prints. The teardown checks are shared with the pod demo (``kvnet.lab.teardown``).
"""
